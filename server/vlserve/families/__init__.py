"""One folder per model family. engine/family.py is the contract they implement;
repository/registry.py is how a folder finds its family."""
