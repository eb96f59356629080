"""Alembic migrations (run through :meth:`storage.db.engine.Database.upgrade` or ``atelier db upgrade``)."""
