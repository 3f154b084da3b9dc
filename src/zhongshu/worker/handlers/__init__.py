"""Handler modules shipped with zhongshu (``builtin``: echo, sleep, fail, http.fetch)."""
