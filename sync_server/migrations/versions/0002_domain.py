"""Domain schema: areas, services, workers and shifts, service points, compartments, cases,
assignments, audit, notifications, web sessions, issued credentials, resident records.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "areas",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.CheckConstraint("level IN ('street', 'community', 'grid')", name=op.f("ck_areas_level")),
        sa.ForeignKeyConstraint(["parent_id"], ["areas.id"], name=op.f("fk_areas_parent_id_areas")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_areas")),
    )
    op.create_table(
        "audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(length=96), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index("ix_audit_case", "audit", ["case_id"], unique=False)

    op.create_table(
        "certificate_revocations",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_certificate_revocations")),
    )
    op.create_table(
        "compartments",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("size", sa.String(length=8), nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("door", sa.String(length=16), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "number", name=op.f("pk_compartments")),
    )
    op.create_table(
        "login_failures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index("ix_login_failures_key_at", "login_failures", ["key", "at"], unique=False)

    op.create_table(
        "notifications",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("dedupe", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'sent', 'failed', 'recorded')",
            name=op.f("ck_notifications_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedupe", name="uq_notifications_dedupe"),
    )
    op.create_table(
        "services",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("documents", sa.JSON(), nullable=False),
        sa.Column("pickup_hours", sa.Double(), nullable=False),
        sa.Column("process_hours", sa.Double(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
    )
    op.create_table(
        "record_imports",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_record_imports_community_id_areas")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_imports")),
    )
    op.create_table(
        "service_points",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("area_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("lat", sa.Double(), nullable=True),
        sa.Column("lon", sa.Double(), nullable=True),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.CheckConstraint("kind IN ('kiosk', 'locker')", name=op.f("ck_service_points_kind")),
        sa.ForeignKeyConstraint(
            ["area_id"], ["areas.id"], name=op.f("fk_service_points_area_id_areas")
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_service_points")),
    )
    op.create_table(
        "workers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("area_id", sa.String(length=32), nullable=True),
        sa.Column("home_lat", sa.Double(), nullable=True),
        sa.Column("home_lon", sa.Double(), nullable=True),
        sa.Column("speed_kmh", sa.Double(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.CheckConstraint("role IN ('worker', 'staff', 'admin')", name=op.f("ck_workers_role")),
        sa.ForeignKeyConstraint(["area_id"], ["areas.id"], name=op.f("fk_workers_area_id_areas")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.UniqueConstraint("username", name=op.f("uq_workers_username")),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("grid_id", sa.String(length=32), nullable=False),
        sa.Column("compartment", sa.Integer(), nullable=True),
        sa.Column("result_compartment", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("resumes", sa.String(length=16), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("access_hash", sa.String(length=64), nullable=False),
        sa.Column("link_hash", sa.String(length=64), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("wechat_openid", sa.String(length=64), nullable=True),
        sa.Column("worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("updated", sa.Double(), nullable=False),
        sa.Column("due_at", sa.Double(), nullable=True),
        sa.Column("deposited_at", sa.Double(), nullable=True),
        sa.Column("collected_at", sa.Double(), nullable=True),
        sa.Column("result_ready_at", sa.Double(), nullable=True),
        sa.Column("result_at", sa.Double(), nullable=True),
        sa.Column("completed_at", sa.Double(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("level IN ('grid', 'community', 'street')", name=op.f("ck_cases_level")),
        sa.CheckConstraint(
            "state IN ('draft', 'deposited', 'assigned', 'collected', 'processing', "
            "'result_stored', 'completed', 'overdue', 'escalated', 'cancelled')",
            name=op.f("ck_cases_state"),
        ),
        sa.ForeignKeyConstraint(["grid_id"], ["areas.id"], name=op.f("fk_cases_grid_id_areas")),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_cases_service_id_services")
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_cases_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    op.create_index("ix_cases_device", "cases", ["device_id"], unique=False)
    op.create_index("ix_cases_state_due", "cases", ["state", "due_at"], unique=False)

    op.create_table(
        "households",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("residence_since", sa.String(length=10), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("import_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("updated", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_households_community_id_areas")
        ),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["record_imports.id"],
            name=op.f("fk_households_import_id_record_imports"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_households")),
    )
    op.create_table(
        "issued_credentials",
        sa.Column("cti", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("compartment", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("issued", sa.Double(), nullable=False),
        sa.Column("expires", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('collect', 'worker-open', 'deposit')", name=op.f("ck_issued_credentials_kind")
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_issued_credentials_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("cti", name=op.f("pk_issued_credentials")),
    )
    op.create_index("ix_issued_credentials_case", "issued_credentials", ["case_id"], unique=False)

    op.create_table(
        "shifts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("start_at", sa.Double(), nullable=False),
        sa.Column("end_at", sa.Double(), nullable=False),
        sa.CheckConstraint("end_at > start_at", name=op.f("ck_shifts_order")),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_shifts_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shifts")),
    )
    op.create_index("ix_shifts_worker_end", "shifts", ["worker_id", "end_at"], unique=False)

    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("expires", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_web_sessions_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sessions")),
    )
    op.create_table(
        "worker_grids",
        sa.Column(
            "worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("grid_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["grid_id"], ["areas.id"], name=op.f("fk_worker_grids_grid_id_areas")
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_worker_grids_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("worker_id", "grid_id", name=op.f("pk_worker_grids")),
    )
    op.create_table(
        "assignments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column(
            "worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("ack_due", sa.Double(), nullable=False),
        sa.Column("acknowledged_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("eta", sa.Double(), nullable=True),
        sa.Column("cost", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("kind IN ('pickup', 'return')", name=op.f("ck_assignments_kind")),
        sa.CheckConstraint(
            "status IN ('offered', 'acknowledged', 'done', 'timed_out', 'declined', 'cancelled')",
            name=op.f("ck_assignments_status"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_assignments_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_assignments_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignments")),
    )
    op.create_index(
        "ix_assignments_worker_status", "assignments", ["worker_id", "status"], unique=False
    )
    op.create_index(
        "uq_assignments_open_case",
        "assignments",
        ["case_id"],
        unique=True,
        sqlite_where=sa.text("status IN ('offered', 'acknowledged')"),
        postgresql_where=sa.text("status IN ('offered', 'acknowledged')"),
    )

    op.create_table(
        "residents",
        sa.Column("id_number", sa.String(length=18), nullable=False),
        sa.Column("household_id", sa.String(length=64), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("gender", sa.String(length=4), nullable=True),
        sa.Column("birth_date", sa.String(length=10), nullable=False),
        sa.Column("relation", sa.String(length=16), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("subsidy_year", sa.Integer(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("import_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("updated", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_residents_community_id_areas")
        ),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_residents_household_id_households")
        ),
        sa.ForeignKeyConstraint(
            ["import_id"], ["record_imports.id"], name=op.f("fk_residents_import_id_record_imports")
        ),
        sa.PrimaryKeyConstraint("id_number", name=op.f("pk_residents")),
    )
    op.create_index("ix_residents_community", "residents", ["community_id"], unique=False)
    op.create_index("ix_residents_household", "residents", ["household_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_residents_household", table_name="residents")
    op.drop_index("ix_residents_community", table_name="residents")

    op.drop_table("residents")
    op.drop_index(
        "uq_assignments_open_case",
        table_name="assignments",
        sqlite_where=sa.text("status IN ('offered', 'acknowledged')"),
        postgresql_where=sa.text("status IN ('offered', 'acknowledged')"),
    )
    op.drop_index("ix_assignments_worker_status", table_name="assignments")

    op.drop_table("assignments")
    op.drop_table("worker_grids")
    op.drop_table("web_sessions")
    op.drop_index("ix_shifts_worker_end", table_name="shifts")

    op.drop_table("shifts")
    op.drop_index("ix_issued_credentials_case", table_name="issued_credentials")

    op.drop_table("issued_credentials")
    op.drop_table("households")
    op.drop_index("ix_cases_state_due", table_name="cases")
    op.drop_index("ix_cases_device", table_name="cases")

    op.drop_table("cases")
    op.drop_table("workers")
    op.drop_table("service_points")
    op.drop_table("record_imports")
    op.drop_table("services")
    op.drop_table("notifications")
    op.drop_index("ix_login_failures_key_at", table_name="login_failures")

    op.drop_table("login_failures")
    op.drop_table("compartments")
    op.drop_table("certificate_revocations")
    op.drop_index("ix_audit_case", table_name="audit")

    op.drop_table("audit")
    op.drop_table("areas")
