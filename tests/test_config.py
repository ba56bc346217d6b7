"""Config files + overrides: wrong input names the key and what is allowed."""
import pytest

from jedi_train.config import ConfigError, load_config
from jedi_train.run import main

BASE = ["datasets.ucf.shards=shards/ucf"]


def test_overrides_are_typed():
    config = load_config(None, BASE + ["schedule.epochs=3", "jedi.temperature=2", "data.strong_view=true",
                                       "datasets.ucf.backbone=x3d_xs"])
    assert config.schedule.epochs == 3 and isinstance(config.schedule.epochs, int)
    assert config.jedi.temperature == 2.0 and config.data.strong_view is True
    assert config.datasets["ucf"].backbone == "x3d_xs"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\nschedule:\n  epochs: 4\n  lr: 0.01\ndatasets:\n  ucf: {shards: s/ucf}\n")
    config = load_config(path, ["schedule.epochs=7"])
    assert config.name == "exp" and config.schedule.epochs == 7 and config.schedule.lr == 0.01


@pytest.mark.parametrize("override, words", [
    (["jedi.temprature=3"], ["jedi.temprature", "valid keys under jedi", "temperature"]),
    (["jedi.epochs=3"], ["jedi.epochs moved to schedule.epochs"]),
    (["jedi.arms=jedi"], ["jedi.arms moved to methods"]),
    (["jedi.distillation=medium"], ["jedi.distillation='medium'", "soft, hard"]),
    (["schedule.epochs=three"], ["schedule.epochs", "integer"]),
    (["datasets.ucf.backbone=resnet9"], ["datasets.ucf.backbone", "x3d_tiny"]),
    (["stage=train"], ["stage", "experts, probe, methods, jedi, eval, all"]),
    (["methods=jedi,meen_teacher"], ["methods=", "unknown method meen_teacher", "self_training, supervised"]),
    (["method=jedy"], ["method=", "unknown method jedy", "jedi_no_foreign_grad"]),
    (["loader=dali"], ["unknown config key loader", "valid keys under the top level"]),
    (["jedi.teacher_cache=true", "jedi.teacher_cache_labelled=true"],
     ["jedi.teacher_cache_labelled", "jedi.foreign_grad_scale=0", "foreign_grad_scale=1.0"]),
])
def test_bad_values_name_key_and_allowed(override, words):
    with pytest.raises(ConfigError) as error:
        load_config(None, BASE + override)
    for word in words:
        assert word in str(error.value)


def test_missing_shards_is_a_clear_error(tmp_path, capsys):
    code = main([f"datasets.ucf.shards={tmp_path / 'nowhere'}", f"output_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "datasets.ucf.shards" in err and "manifest.json" in err


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for key in ("methods=", "method=", "schedule.lr", "jedi.foreign_grad_scale", "data.loader", "model.foreign_bn", "clip.frames"):
        assert key in out


def test_foreign_gradient_warmup_is_a_ramp():
    from jedi_train.methods.jedi import ARMS, Config, JediMethod
    from jedi_train.models import VideoBackbone
    cfg = Config(foreign_grad_scale=0.5, foreign_grad_warmup_steps=10)

    def arm(name):
        from jedi_train.jedi import DistillSettings
        return JediMethod(name, cfg, {"a": VideoBackbone("cnn3d_small", "groupnorm")}, {"a": 3}, DistillSettings(),
                          {"a": 1.0})
    assert [arm("jedi").foreign_scale(step) for step in (0, 5, 10, 20)] == [0.0, 0.25, 0.5, 0.5]
    assert arm("jedi_no_foreign_grad").foreign_scale(20) == 0.0 and arm("self_training").foreign_scale(20) == 0.0
    assert set(ARMS) >= {"jedi", "self_training", "supervised", "jedi_no_foreign_grad"}


def test_time_reversal_is_off_unless_asked_and_refused_where_it_changes_labels(tiny_shards):
    from jedi_train.config import ConfigError
    from jedi_train.data import dataset_infos
    shards = [f"datasets.{name}.shards={tiny_shards[name]}" for name in ("ucf101", "ssv2")]
    infos = dataset_infos(load_config(None, shards))
    assert not infos["ucf101"].manifest.time_reversal_changes_label  # the manifest does not forbid it ...
    assert not infos["ucf101"].time_reversal and not infos["ssv2"].time_reversal  # ... yet auto is off
    assert dataset_infos(load_config(None, shards + ["datasets.ucf101.time_reversal=on"]))["ucf101"].time_reversal
    with pytest.raises(ConfigError, match="datasets.ssv2.time_reversal=on"):
        dataset_infos(load_config(None, shards + ["datasets.ssv2.time_reversal=on"]))
