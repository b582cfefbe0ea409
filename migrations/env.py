"""Alembic environment: the URL comes from the caller (service.storage.db.migrate), not a file."""

from alembic import context

from service.storage.db.engine import make_engine
from service.storage.db.tables import Base

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: run migrations with `gradual migrate`")

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
