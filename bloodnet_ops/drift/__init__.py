"""Drift monitoring across sites: recent nights against reference nights.

- ``stats``     PSI, KS, chi-square, CUSUM and a two-proportion test (small-sample care)
- ``windows``   reference and recent windows of nights per site
- ``features``  what is compared, read from the results database
- ``monitor``   ``run_drift``: statistics, thresholds, statuses, stored rows and alerts
- ``alerts``    structured log line and optional webhook POST
"""
