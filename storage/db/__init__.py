"""The database layer: engine and sessions, ORM models, migrations, the blob store and its garbage collection."""
