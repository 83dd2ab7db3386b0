"""The contract suite over the whole method registry: every method is tested for free."""

import pytest

from mlmm.testing import method_checks


@pytest.mark.parametrize(
    "name, check", list(method_checks()), ids=lambda v: v if isinstance(v, str) else v.__name__
)
def test_method_contract(name, check):
    check(name)
