"""Fleet triage: one flat record per dump, over many dumps, serially, in local processes or on a
Dask cluster.

:mod:`.record` is the record and the crash fingerprint, :mod:`.triage` the per-dump task (never
raises, picklable), :mod:`.runners` the ways to map it over paths (resumable), :mod:`.report`
the summaries and the HTML page.
"""
