import stsdub
import stsdub.testing


def test_all_is_sorted_and_complete() -> None:
    assert stsdub.__all__ == sorted(stsdub.__all__)
    exported = {name for name in dir(stsdub) if not name.startswith("_")}
    # Submodules are importable but not part of __all__.
    modules = {"errors", "hookspecs", "ray", "server", "stages", "testing"}
    assert exported - modules - {"annotations"} == set(stsdub.__all__) - {"__version__"}


def test_testing_all_is_sorted() -> None:
    assert stsdub.testing.__all__ == sorted(stsdub.testing.__all__)
    for name in stsdub.testing.__all__:
        assert getattr(stsdub.testing, name).__module__.startswith("stsdub.testing")


def test_public_names_resolve() -> None:
    for name in stsdub.__all__:
        assert getattr(stsdub, name) is not None
    assert stsdub.__version__


def test_projects_are_public() -> None:
    # Review and resume from Python: the project value, its segments and its error.
    assert {"DubProject", "ProjectError", "ProjectSegment"} <= set(stsdub.__all__)
    assert issubclass(stsdub.ProjectError, stsdub.StsdubError)
