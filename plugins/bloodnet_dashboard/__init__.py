"""The BloodNet dashboards as an Airflow 3 plugin; the plugin class lives in ``plugin.py``.

Airflow imports every ``.py`` file of the plugins folder as its own module and registers each
``AirflowPlugin`` subclass it finds, so this file deliberately re-exports nothing: exposing the
class here too would register it twice.
"""
