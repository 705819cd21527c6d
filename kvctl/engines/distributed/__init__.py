"""Where the slices of a migrate or diff run: this machine's processes or a Dask cluster."""
