"""The API's contract (request and response models, error codes), in a package of its own
name so the installable client can carry it without claiming a generic top-level name
such as ``common`` in its users' environments."""
