"""Foreign dataset formats: CALVIN, LIBERO / robomimic HDF5, Diffusion Policy zarr.

- ``cards``: dataset cards (``datasets/*.yaml``): key mapping, roles, action space, rates.
- ``calvin_import``, ``libero_import``, ``dp_zarr``: planners for `dp import`; ``calvin_export``,
  ``libero_export``, ``lerobot_export``: writers for `dp export-data`.
- ``calvin_decode``, ``libero_decode``, ``dp_zarr_decode``: the jobs import workers run (numpy only).
- ``pipeline``: the resumable, parallel import driver they share.
- ``safe_pickle``: a restricted unpickler for CALVIN's pickled ``.npy`` files.
"""
