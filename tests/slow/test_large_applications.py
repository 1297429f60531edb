"""The larger keras.applications models track measurement (slow: about a minute each)."""
import pytest

from helpers import assert_application_tracks


@pytest.mark.parametrize("name", ["ResNet50", "DenseNet121", "EfficientNetB0"])
def test_application_initializes_and_tracks(name, caplog):
    assert_application_tracks(name, caplog)
