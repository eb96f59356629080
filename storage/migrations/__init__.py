"""Alembic migrations (run through :meth:`storage.db.Database.upgrade` or ``atelier db upgrade``)."""
