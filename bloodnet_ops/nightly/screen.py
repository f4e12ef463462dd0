"""All the steps in one process (``bloodnet screen``): the same functions the DAG's tasks call."""

from __future__ import annotations

from bloodnet_ops.nightly.common import DEFAULT_BATCH
from bloodnet_ops.nightly.discover import discover
from bloodnet_ops.nightly.infer import infer_batch
from bloodnet_ops.nightly.plan import plan_batches
from bloodnet_ops.nightly.records import RunSummary
from bloodnet_ops.nightly.summarise import fail_run, summarise_run
from bloodnet_ops.nightly.validate import validate_and_record
from bloodnet_ops.storage import S3Config


def screen(
    source_uri: str,
    db_url: str,
    model_path: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
    output_uri: str | None = None,
    prefix: str | None = None,
    site: str | None = None,
    rescan: bool = False,
    run_id: str | None = None,
    write_dicom: bool = True,
    progress: bool = False,
    s3: S3Config | None = None,
) -> RunSummary:
    """The nightly job without Airflow: discover, validate, plan, infer each batch, summarise."""
    found = discover(source_uri, db_url, prefix=prefix, run_id=run_id, rescan=rescan,
                     output_uri=output_uri, s3=s3)
    bar = None
    try:
        validate_and_record(found.source_uri, db_url, found.run_id, prefix=prefix, site=site,
                            s3=s3)
        batches = plan_batches(db_url, found.run_id, batch_size)
        counts = []
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(map(len, batches)), unit="study", desc="screening")
        for batch in batches:
            counts.append(infer_batch(found.source_uri, db_url, batch, found.run_id,
                                      model_path, output_uri=output_uri,
                                      write_dicom=write_dicom, s3=s3))
            if bar is not None:
                bar.update(len(batch))
        return summarise_run(db_url, found.run_id, counts)
    except BaseException as exc:  # incl. Ctrl-C: the run is over either way
        fail_run(db_url, found.run_id, exc)
        raise
    finally:
        if bar is not None:
            bar.close()
