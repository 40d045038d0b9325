"""numpy_app: a Flower / NumPy app."""
