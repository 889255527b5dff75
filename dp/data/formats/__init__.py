"""Foreign dataset formats: CALVIN, LIBERO / robomimic HDF5, Diffusion Policy zarr.

- ``cards``: dataset cards (``datasets/*.yaml``): key mapping, roles, action space, rates.
- ``calvin``, ``libero``, ``dp_zarr``: planners for `dp import`, exporters for `dp export-data`.
- ``pipeline``: the resumable, parallel import driver they share.
- ``safe_pickle``: a restricted unpickler for CALVIN's pickled ``.npy`` files.
- ``synthetic``: small spec-faithful datasets in each format, for tests and benchmarks.
"""
