"""Retrospective audit of missed ICH against radiology reads.

- ``reads``       import reads (CSV / JSON lines, disk or S3), pseudonymise, match to studies
- ``worklist``    the discordance worklist (reader misses, model misses, re-read samples)
- ``sampling``    the stratified, seeded re-read sample of model negatives
- ``figures``     per-site and overall sensitivity, specificity, PPV, NPV, AUC with 95 % CIs
- ``run``         ``run_audit``: one stored audit run (what the CLI and the DAG call)
- ``adjudicate``  a reviewer's verdict on a worklist item
"""
