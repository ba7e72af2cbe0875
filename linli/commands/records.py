"""`linli records`: import a community's resident spreadsheet, check one, query and export,
and publish a community's records to its kiosks.

What is printed never holds an ID number, a name or a phone number in clear (they are masked);
only ``--export`` writes the records themselves, to a file the operator chose.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sync_server.records import ImportReport, ResidentRecord, RowProblem

SHOWN_PROBLEMS = 20
"""Problem lines printed after an import or check; the report file holds them all."""
EXIT_REJECTED = 3
"""``--fail-on-rejects``: the import committed, but some rows were rejected."""
EXIT_NOT_PUBLISHED = 4
"""The import committed, but publishing it to the kiosks failed (``linli records publish``)."""
DB_HELP = "Server database URL (sqlite:///PATH or postgresql+psycopg://...), already migrated."


@click.group()
def records() -> None:
    """Resident records (一户一档): import spreadsheets, check them, query, export, publish."""


@contextmanager
def _database(url: str) -> Iterator[Engine]:
    from sync_server.db import open_database
    from sync_server.errors import ServerError

    try:
        engine = open_database(url)
    except ServerError as err:
        raise click.ClickException(str(err)) from err
    try:
        yield engine
    finally:
        engine.dispose()


def _echo_problems(problems: Sequence[RowProblem], total_rows: int) -> None:
    for problem in problems[:SHOWN_PROBLEMS]:
        click.echo(f"  {problem.line()}", err=True)
    if len(problems) > SHOWN_PROBLEMS:
        click.echo(
            f"  ... and {len(problems) - SHOWN_PROBLEMS} more problems "
            f"({total_rows} rows rejected in all)",
            err=True,
        )


def _write_report(path: Path, report: dict[str, object]) -> None:
    try:
        path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", "utf-8")
    except OSError as err:
        raise click.ClickException(f"{path}: cannot write the report ({err.strerror})") from err


@records.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--mapping",
    "mapping_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Column mapping (TOML); see sync_server/records_mapping.example.toml.",
)
@click.option("--community", required=True, help="Community id (an areas row of level community).")
@click.option("--db", "db_url", default="sqlite:///linli-server.db", show_default=True,
              help=DB_HELP)  # fmt: skip
@click.option(
    "--replace",
    is_flag=True,
    help="Also delete the community's residents whose ID number is not in the file.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full report (JSON, masked) here.",
)
@click.option(
    "--fail-on-rejects",
    is_flag=True,
    help=f"Exit with status {EXIT_REJECTED} when rows were rejected (the import still commits).",
)
@click.option(
    "--no-publish",
    is_flag=True,
    help="Do not publish the records to the community's kiosks after the import.",
)
def import_(
    *,
    file: Path,
    mapping_path: Path,
    community: str,
    db_url: str,
    replace: bool,
    report_path: Path | None,
    fail_on_rejects: bool,
    no_publish: bool,
) -> None:
    """Import FILE (.csv or .xlsx) into a community's records, in one transaction, then
    publish what changed to the community's kiosks (unless --no-publish).

    Accepted rows are stored even when others are rejected; exit status 0 means the import
    committed. The rejected rows are listed (ID numbers and names masked) and, with --report,
    written to a JSON file. Exit status 4: the import committed but publishing failed; run
    linli records publish.
    """
    from sync_server.records import RecordsError, import_records, load_mapping

    try:
        mapping = load_mapping(mapping_path)
        with _database(db_url) as engine:
            report = import_records(engine, file, mapping, community, replace=replace)
            _echo_report(report, report_path)
            published = no_publish or _publish_import(engine, report)
    except RecordsError as err:
        raise click.ClickException(str(err)) from err
    if not published:
        raise click.exceptions.Exit(EXIT_NOT_PUBLISHED)
    if fail_on_rejects and report.rejected:
        raise click.exceptions.Exit(EXIT_REJECTED)


def _echo_report(report: ImportReport, report_path: Path | None) -> None:
    click.echo(f"import {report.import_id}: {report.summary()}")
    if report.missing_columns:
        click.echo(f"  columns not in the file: {', '.join(report.missing_columns)}", err=True)
    _echo_problems(report.problems, report.rejected)
    if report_path is not None:
        _write_report(report_path, report.to_json())
        click.echo(f"report: {report_path}")


def _publish_import(engine: Engine, report: ImportReport) -> bool:
    """Publish the imported community, and every other published community when residents
    moved (their old community's kiosks must drop them); False (said on stderr) on failure."""
    from sync_server.documents import scopes

    communities = [report.community_id]
    if report.moved:
        communities += [c for c in scopes(engine, "residents") if c != report.community_id]
    try:
        _publish(engine, communities)
    except _PublishFailed as failed:
        where = engine.url.render_as_string(hide_password=True)
        click.echo(
            f"import {report.import_id} committed, but {failed}. Fix that, then run: "
            f"linli records publish --community {failed.community} --db {where}",
            err=True,
        )
        return False
    return True


class _PublishFailed(Exception):
    def __init__(self, community: str, why: str) -> None:
        super().__init__(f"the kiosks of {community} were not updated: {why}")
        self.community = community


def _publish(engine: Engine, communities: Sequence[str]) -> None:
    """Publish each community and say what happened; :class:`_PublishFailed` at the first
    failure (earlier ones stay published). Database errors are named by type only: their text
    may quote records."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync_server.errors import ServerError
    from sync_server.records.publish import publish_community

    for community in communities:
        try:
            version = publish_community(engine, community)
        except ServerError as err:
            raise _PublishFailed(community, str(err)) from err
        except SQLAlchemyError as err:
            raise _PublishFailed(community, f"database error ({type(err).__name__})") from err
        if version is None:
            click.echo(f"{community}: kiosks up to date (nothing changed)")
        else:
            click.echo(f"{community}: residents version {version} published to the kiosks")


@records.command("publish")
@click.option(
    "--community",
    "communities",
    multiple=True,
    help="Community id (an areas row of level community); repeat for several.",
)
@click.option(
    "--all",
    "all_communities",
    is_flag=True,
    help="Every community (areas of level community), e.g. after upgrading the server.",
)
@click.option("--db", "db_url", default="sqlite:///linli-server.db", show_default=True,
              help=DB_HELP)  # fmt: skip
def publish(*, communities: tuple[str, ...], all_communities: bool, db_url: str) -> None:
    """Publish communities' resident records to their kiosks: one new version of each
    community's residents document with only the residents added, changed or removed since
    its last version (nothing when none). An import does this itself unless --no-publish.
    """
    if bool(communities) == all_communities:
        raise click.UsageError("give --community C (one or more times) or --all")
    with _database(db_url) as engine:
        if all_communities:
            from sync_server.records.publish import community_ids

            communities = tuple(community_ids(engine))
            if not communities:
                raise click.ClickException("no community in the areas table; load the site first")
        try:
            _publish(engine, communities)
        except _PublishFailed as failed:
            raise click.ClickException(str(failed)) from failed


@records.command("check")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--mapping",
    "mapping_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Column mapping (TOML).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the problems (JSON, masked) here.",
)
def check(*, file: Path, mapping_path: Path, report_path: Path | None) -> None:
    """Check FILE against the mapping without a database; exit status 1 if a row is rejected.

    Run it before an import to fix the spreadsheet first. (An import also refuses households
    another community uses; only the database knows those.)
    """
    from sync_server.records import RecordsError, load_mapping
    from sync_server.records.importer import check_file

    try:
        _sheet, validation = check_file(file, load_mapping(mapping_path))
    except RecordsError as err:
        raise click.ClickException(str(err)) from err
    click.echo(
        f"{file.name}: {validation.rows} rows, {len(validation.accepted)} acceptable, "
        f"{validation.rejected_rows} rejected; {len(validation.households)} households"
    )
    _echo_problems(validation.problems, validation.rejected_rows)
    if report_path is not None:
        _write_report(
            report_path,
            {
                "source": file.name,
                "rows": validation.rows,
                "accepted": len(validation.accepted),
                "rejected": validation.rejected_rows,
                "problems": [p.to_json() for p in validation.problems],
            },
        )
    if validation.rejected_rows:
        raise click.exceptions.Exit(1)


def _masked_phone(phone: str | None) -> str:
    return f"{phone[:3]}****{phone[-4:]}" if phone else "-"


@records.command("query")
@click.option("--db", "db_url", default="sqlite:///linli-server.db", show_default=True,
              help=DB_HELP)  # fmt: skip
@click.option("--community", default=None, help="Only this community.")
@click.option("--min-age", type=click.IntRange(0, 150), default=None, help="Aged at least N.")
@click.option("--max-age", type=click.IntRange(0, 150), default=None, help="Aged at most N.")
@click.option(
    "--on",
    "on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Ages on this date (YYYY-MM-DD; default today, China time).",
)
@click.option(
    "--subsidy-missing",
    type=click.IntRange(2000, 2999),
    default=None,
    metavar="YEAR",
    help="Not certified for the elderly subsidy in YEAR (last certification before, or never).",
)
@click.option("--household", default=None, help="Only this household (户号).")
@click.option(
    "--phone/--no-phone", "has_phone", default=None, help="Only those with / without a phone."
)
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the residents found to a .csv (UTF-8 with BOM) or .xlsx file.",
)
def query(
    *,
    db_url: str,
    community: str | None,
    min_age: int | None,
    max_age: int | None,
    on: dt.datetime | None,
    subsidy_missing: int | None,
    household: str | None,
    has_phone: bool | None,
    export_path: Path | None,
) -> None:
    """Find residents by condition; print them masked, or --export them in full.

    Residents aged 80 or more not certified this year:
    linli records query --community C01 --min-age 80 --subsidy-missing 2026 --export due.xlsx
    """
    from sync_server.records import RecordsError, export_residents, find_residents

    with _database(db_url) as engine:
        found: list[ResidentRecord] = find_residents(
            engine,
            community,
            min_age=min_age,
            max_age=max_age,
            on=on.date() if on else None,
            subsidy_missing_year=subsidy_missing,
            household_id=household,
            has_phone=has_phone,
        )
    if export_path is not None:
        try:
            written = export_residents(found, export_path)
        except RecordsError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"{written} residents written to {export_path}")
        return
    from sync_server.records import mask_id_number, mask_name

    for r in found:
        click.echo(
            f"{mask_id_number(r.id_number)}  {mask_name(r.name)}  {r.age:>3}  "
            f"{r.household_id}  {_masked_phone(r.phone)}  {r.subsidy_year or '-'}"
        )
    click.echo(f"{len(found)} residents")


@records.command("remind")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Server config (TOML): its database and [notify] adapters are used.",
)
@click.option("--community", required=True, help="The community whose residents are reminded.")
@click.option("--min-age", type=click.IntRange(0, 150), default=80, show_default=True,
              help="Aged at least N.")  # fmt: skip
@click.option(
    "--subsidy-missing",
    type=click.IntRange(2000, 2999),
    required=True,
    metavar="YEAR",
    help="Remind those not certified for the elderly subsidy in YEAR.",
)
@click.option("--deadline", required=True, help="Certification deadline as residents read it.")
@click.option("--place", required=True, help="Where to certify (the message names it).")
@click.option(
    "--channel", type=click.Choice(["sms", "wechat"]), default="sms", show_default=True,
    help="Notification channel ([notify] in the config says which adapter).",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Count whom the reminder would reach; send nothing.")
def remind(
    *,
    config_path: Path,
    community: str,
    min_age: int,
    subsidy_missing: int,
    deadline: str,
    place: str,
    channel: str,
    dry_run: bool,
) -> None:
    """Send the elderly-subsidy certification reminder (高龄补贴认证提醒) to residents due.

    Deduplicated per resident and year: run it again (after a failure, or to catch up new
    residents) and nobody is reminded twice. Failed sends are retried by the running server.
    """
    from sync_server.config import load_server_config
    from sync_server.errors import ServerError
    from sync_server.notify.service import NotificationService
    from sync_server.notify.settings import build_notifiers
    from sync_server.records import find_residents, remind_residents

    try:
        config = load_server_config(config_path)
    except ServerError as err:
        raise click.ClickException(str(err)) from err
    with _database(config.database.url) as engine:
        found = find_residents(
            engine, community, min_age=min_age, subsidy_missing_year=subsidy_missing
        )
        if dry_run:
            with_phone = sum(1 for r in found if r.phone)
            click.echo(f"{len(found)} residents due, {with_phone} with a phone")
            return
        service = NotificationService(
            engine, build_notifiers(config.notify), retry=config.notify.retry
        )
        try:
            counts = remind_residents(
                found,
                service.notify,
                params={"deadline": deadline, "place": place},
                dedupe_prefix=f"subsidy-{subsidy_missing}",
                channel=channel,
            )
        finally:
            service.close()
    click.echo(
        f"{counts.residents} residents due: {counts.requested} reminders requested "
        f"(already reminded ones are not sent again), {counts.skipped_no_phone} without a phone"
    )
