from tests.engine.conftest import calls  # noqa: F401  (the same execution log fixture)
