"""Store tests: `contract.py` is the suite every backend's test classes subclass."""

import pytest

# The contract's asserts live outside test modules; have pytest explain them all the same.
pytest.register_assert_rewrite(f"{__name__}.contract")
