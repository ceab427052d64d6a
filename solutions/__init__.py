"""Reference solutions: generated from source/ by `python -m utils.build`."""
