"""torch_app: a Flower / PyTorch app."""
