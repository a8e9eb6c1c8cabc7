import pytest

from dassl_lite.errors import RegistryKeyError
from dassl_lite.registry import Registry


def make():
    reg = Registry("TRAINER")

    @reg.register()
    class CoOp:
        pass

    @reg.register()
    class CoCoOp:
        pass

    reg.register(lambda cfg: None, name="MaPLe")
    return reg, CoOp


def test_register_as_decorator_and_call():
    reg, coop = make()
    assert reg.get("CoOp") is coop
    assert "MaPLe" in reg and "maple" not in reg
    assert reg.names() == ["CoCoOp", "CoOp", "MaPLe"]
    assert list(reg) == reg.names() and len(reg) == 3


def test_miss_names_closest_and_lists_all():
    reg, _ = make()
    with pytest.raises(RegistryKeyError) as e:
        reg.get("CoOP")
    assert str(e.value) == (
        "No trainer 'CoOP' in TRAINER registry. Did you mean 'CoOp'? "
        "Registered: CoCoOp, CoOp, MaPLe"
    )
    assert isinstance(e.value, KeyError)


def test_miss_without_close_name():
    reg, _ = make()
    with pytest.raises(RegistryKeyError) as e:
        reg.get("Zzz")
    assert str(e.value) == "No trainer 'Zzz' in TRAINER registry. Registered: CoCoOp, CoOp, MaPLe"


def test_duplicate_names_first_location():
    reg, coop = make()

    class CoOp:  # noqa: F811 - a different class with the same name
        pass

    with pytest.raises(RegistryKeyError) as e:
        reg.register(CoOp)
    msg = str(e.value)
    assert msg.startswith("'CoOp' is already registered in the TRAINER registry by ")
    assert "test_registry.make.<locals>.CoOp" in msg and "test_registry.py:" in msg
    reg.register(coop)  # the same object again is a no-op
    reg.register(CoOp, force=True)
    assert reg.get("CoOp") is CoOp
