"""Document scopes: ``documents.scope`` ('' = global, a community id for ``residents``) in the
primary key (doc, scope, version), and version numbers unique per document across scopes.

Existing rows become the global history (scope ''). Old ``residents`` rows stay: kiosks never
read them again, but their numbers keep every community's new versions above what kiosks hold.

Downgrade deletes every scoped row (the old schema has one history per document, and mixing the
communities' histories would send every kiosk every community's residents).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot change a primary key in place, so the table is copied (in the
    # migration's transaction); PostgreSQL gets plain ALTER TABLE statements.
    with op.batch_alter_table("documents") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=32), server_default="", nullable=False)
        )
        batch.drop_constraint("pk_documents", type_="primary")
        batch.create_primary_key("pk_documents", ["doc", "scope", "version"])
        batch.create_unique_constraint("uq_documents_doc_version", ["doc", "version"])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM documents WHERE scope <> ''"))
    with op.batch_alter_table("documents") as batch:
        batch.drop_constraint("uq_documents_doc_version", type_="unique")
        batch.drop_constraint("pk_documents", type_="primary")
        batch.create_primary_key("pk_documents", ["doc", "version"])
        batch.drop_column("scope")
