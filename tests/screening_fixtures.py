"""Fixtures and helpers shared by tests/test_screening.py and tests/test_dags.py.

- ``tiny_model``   a small, untrained ``bloodnet`` checkpoint written with the model package's own
                   checkpoint function: these tests check rows and provenance, not accuracy, and
                   a small network keeps them fast on two CPU cores.
- ``fresh_db``     a new migrated database per test (the session's ``database_url`` is shared by
                   every test module, and these tests count rows).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Tables whose row counts a rerun must leave unchanged.
STABLE_TABLES = (
    "sites", "objects", "studies", "series", "validation_results", "expectation_results",
    "quarantine", "hu_stats", "model_versions", "findings",
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from bloodnet_ops.model.checkpoint import save_checkpoint
    from bloodnet_ops.model.net import ModelConfig, get_model

    torch.manual_seed(0)
    model = get_model("bloodnet", config=ModelConfig(widths=(8, 16, 32, 64), embed_dim=16,
                                                     gru_hidden=16))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, model, threshold=0.5, size=128, dataset={"kind": "untrained"},
                    train_config={"epochs": 0}, metrics={}, trained_on="nothing (test)")
    return path


@pytest.fixture
def fresh_db(pg_server_url: str) -> Iterator[str]:
    from bloodnet_ops.db.session import migrate
    from bloodnet_ops.services import create_database, drop_database

    name = f"bloodnet_screen_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_server_url, name)
    try:
        migrate(url)
        yield url
    finally:
        from bloodnet_ops import nightly

        nightly.dispose_engines()
        drop_database(pg_server_url, name)


def copy_studies(synth: Path, dest: Path) -> Path:
    """The DICOM part of a synth data set (the site folders), without labels and masks."""
    dest.mkdir(parents=True, exist_ok=True)
    for site in sorted(p for p in synth.iterdir() if p.is_dir() and p.name != "masks"):
        shutil.copytree(site, dest / site.name)
    return dest


def upload_studies(synth: Path, bucket: str, prefix: str) -> int:
    from bloodnet_ops.storage import upload_folder

    n = 0
    for site in sorted(p for p in synth.iterdir() if p.is_dir() and p.name != "masks"):
        n += upload_folder(site, bucket, f"{prefix}/{site.name}")
    return n


def labels(synth: Path) -> dict[str, dict[str, str]]:
    import csv

    with open(synth / "labels.csv", newline="") as fh:
        return {row["study_uid"]: row for row in csv.DictReader(fh)}


def counts(db_url: str) -> dict[str, int]:
    from bloodnet_ops.db import repo
    from bloodnet_ops.db.session import make_engine

    engine = make_engine(db_url)
    try:
        return repo.table_counts(engine)
    finally:
        engine.dispose()


def query(db_url: str, sql: str, **params) -> list:
    from sqlalchemy import text

    from bloodnet_ops.db.session import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()
