"""BloodNet Screening: the framework-free library behind the DAGs, the CLI and the dashboards.

Nothing in this package imports Airflow. Each module does one thing:

- ``reasons``      reason codes and verdicts (stable contract, DESIGN.md §3)
- ``records``      typed records that cross module boundaries
- ``storage``      object sources: a local folder or an ``s3://`` prefix
- ``headers``      header-only DICOM parsing into :class:`records.SliceHeader`
- ``series``       grouping by UID and diagnostic-series selection
- ``validation``   great-expectations suites and the per-study verdict
- ``hu``           fast HU volume loading
- ``pipeline``     discovery → headers → selection → validation, accounting for every object
- ``synth``        the synthetic head-CT phantom generator
- ``model``        BloodNet and its ablation variants, training, inference, metrics
- ``db``           SQLAlchemy models, Alembic migrations, upserts
- ``services``     starting real PostgreSQL / SeaweedFS for tests and the demo
"""

__version__ = "0.1.0"
PREPROCESSING_VERSION = "hu-win3-ctx1-v1"
