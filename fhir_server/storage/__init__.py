"""Storage: the MongoDB collections and the repository, the one way in and out of them."""
