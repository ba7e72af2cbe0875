"""Device identities, one-time enrollment tokens and the device key registry
(``device_identities``, ``enrollment_tokens``, ``device_keys``; docs/provisioning.md).

Downgrade drops the three tables: devices keep working (broker passwords are the broker's), but
enrollment records and the kiosks' registered certificate keys are gone.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_identities",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=80), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("cert_serial", sa.String(length=40), nullable=True),
        sa.Column("cert_pem", sa.Text(), nullable=True),
        sa.Column("cert_not_after", sa.Double(), nullable=True),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("enrolled_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.Column("revoke_reason", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'enrolled', 'revoked')",
            name=op.f("ck_device_identities_state"),
        ),
        sa.CheckConstraint("mode IN ('bundle', 'enroll')", name=op.f("ck_device_identities_mode")),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["service_points.device_id"],
            name=op.f("fk_device_identities_device_id_service_points"),
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_identities")),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("expires", sa.Double(), nullable=False),
        sa.Column("used_at", sa.Double(), nullable=True),
        sa.Column("used_key", sa.String(length=64), nullable=True),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["service_points.device_id"],
            name=op.f("fk_enrollment_tokens_device_id_service_points"),
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_enrollment_tokens")),
    )
    op.create_index("ix_enrollment_tokens_device", "enrollment_tokens", ["device_id"], unique=False)
    op.create_table(
        "device_keys",
        sa.Column("kid", sa.String(length=80), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("retired_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_device_keys")),
    )
    op.create_index("ix_device_keys_device", "device_keys", ["device_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_device_keys_device", table_name="device_keys")
    op.drop_table("device_keys")
    op.drop_index("ix_enrollment_tokens_device", table_name="enrollment_tokens")
    op.drop_table("enrollment_tokens")
    op.drop_table("device_identities")
