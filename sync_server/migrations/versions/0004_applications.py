"""Online applications (网上申请): ``applications`` and the SMS codes that prove a form's phone,
``application_codes`` (docs/applications.md).

Downgrade drops both tables with every application in them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.Column("id_number", sa.String(length=18), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.Column("access_hash", sa.String(length=64), nullable=False),
        sa.Column("submitted_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('submitted', 'accepted', 'done', 'rejected')",
            name=op.f("ck_applications_status"),
        ),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_applications_community_id_areas")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applications")),
    )
    op.create_index(
        "ix_applications_id_number", "applications", ["id_number", "submitted_at"], unique=False
    )
    op.create_index(
        "ix_applications_community_status",
        "applications",
        ["community_id", "status"],
        unique=False,
    )
    op.create_table(
        "application_codes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("phone_key", sa.String(length=64), nullable=False),
        sa.Column("client_key", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("expires", sa.Double(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_application_codes")),
    )
    op.create_index(
        "ix_application_codes_phone_created",
        "application_codes",
        ["phone_key", "created"],
        unique=False,
    )
    op.create_index(
        "ix_application_codes_client_created",
        "application_codes",
        ["client_key", "created"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_application_codes_client_created", table_name="application_codes")
    op.drop_index("ix_application_codes_phone_created", table_name="application_codes")
    op.drop_table("application_codes")
    op.drop_index("ix_applications_community_status", table_name="applications")
    op.drop_index("ix_applications_id_number", table_name="applications")
    op.drop_table("applications")
