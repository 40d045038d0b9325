"""keras_app: a Flower / Keras app."""
