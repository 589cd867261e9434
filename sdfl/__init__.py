"""sdfl-testbed: secure decentralized federated learning across SDN domains, emulated."""

__version__ = "0.1.0"
