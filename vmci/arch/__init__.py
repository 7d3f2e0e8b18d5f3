"""Architecture support: paging, address translation and KASLR discovery."""
