import pickle

import pytest

from labkit.errors import CorruptFileError, NotAModelError, UnsafeFileError


@pytest.mark.parametrize("error", [
    CorruptFileError("ends inside a tensor.", "/models/a.safetensors", "Download it again."),
    NotAModelError("is not a model file."),
    UnsafeFileError("names os.system.", "/x.ckpt", "Do not load it.", verdict={"unsafe": 1}),
])
def test_an_error_crosses_a_process_boundary_whole(error):
    """Worker processes send their errors back pickled: same class, message, path and hint."""
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (str(back), back.path, back.hint) == (str(error), error.path, error.hint)
    assert vars(back) == vars(error)
