"""The test setup itself: missing PyTorch is reported once, with the versions to install."""

def _conftest(request):
    for plugin in request.config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", "").endswith("tests/conftest.py"):
            return plugin
    raise AssertionError("tests/conftest.py is not loaded")


def test_torch_skips_fold_into_one_line_with_the_versions(request):
    conftest = _conftest(request)
    a = conftest.torch_skip_reason(("tests/layers/test_conv.py", 174,
                                    "Skipped: could not import 'torch': No module named 'torch'"))
    b = conftest.torch_skip_reason(("tests/model/test_fpn.py", 190,
                                    "Skipped: could not import 'torchvision.ops': No module "
                                    "named 'torchvision'"))
    assert a == b  # one key: pytest's summary folds them into "SKIPPED [2] ..."
    assert "pip install torch==2.14.1 torchvision==0.29.1" in a[2]
    other = ("tests/test_x.py", 3, "Skipped: shared coco_mini data not present")
    assert conftest.torch_skip_reason(other) == other
