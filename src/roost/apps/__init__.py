"""Ready-to-run federated applications (the bundled demo)."""
