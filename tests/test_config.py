import pytest

from vlcl.config import ConfigError, config_to_dict, dump_config, load_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\ntrain:\n  epochs: 5\nmethod:\n  name: finetune\n")
    config = load_config(path, ["train.epochs=2", "train.batch_size=16", "method.name=zeroshot", "seed=7"])
    assert (config.seed, config.train.epochs, config.train.batch_size, config.method.name) == (7, 2, 16, "zeroshot")
    assert config.run_name == "embedded-zeroshot"


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["method.name=finetune", "train.lr=0.001", "data.tasks=[sketch, counting]"])
    path = tmp_path / "saved.yaml"
    path.write_text(dump_config(config))
    assert config_to_dict(load_config(path)) == config_to_dict(config)


def test_unknown_key_names_key_and_choices():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.epoch=3"])
    message = str(err.value)
    assert "'train.epoch'" in message and "did you mean 'epochs'" in message and "batch_size" in message
    assert "\n" not in message


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(None, ["trian.epochs=3"])


@pytest.mark.parametrize(
    "override, key",
    [("train.epochs=abc", "train.epochs"), ("train.epochs=0", "train.epochs"), ("train.lr=-1", "train.lr"),
     ("eval.recall_convention=best", "eval.recall_convention"), ("seed=x", "seed")],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"invalid value for '{key}'"):
        load_config(None, [override])


def test_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="'seed' is a value"):
        load_config(None, ["seed=1", "seed.x=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:.*line \d+.*malformed YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_method_options_pass_through():
    config = load_config(None, ["method.name=lwf", "method.weight=0.5"])
    assert config.method.options() == {"weight": 0.5}
    assert type(config.method.typed_options()).__name__ == "LwFOptions" and config.method.typed_options().weight == 0.5


def test_method_options_are_validated_once_when_the_config_is_built(monkeypatch):
    """The method's Options parse the options when the config is built, with create_method's one-line errors;
    create_method takes the typed options as they are (no second validation) and still validates a dict."""
    from vlcl.methods import UnknownMethodError, create_method
    from vlcl.methods import registry

    with pytest.raises(UnknownMethodError) as error:
        load_config(None, ["method.name=finetune", "method.alpha=0.5"])
    assert str(error.value) == "unknown option 'method.alpha' for method 'finetune'; its options: none"
    with pytest.raises(UnknownMethodError, match=r"^invalid value for 'method.weight': .* \(got 'x'\)$"):
        load_config(None, ["method.name=lwf", "method.weight=x"])
    with pytest.raises(ConfigError, match="^config: invalid value for 'train.lr'"):  # a config key's error comes first
        load_config(None, ["method.name=lwf", "method.weight=x", "train.lr=x"])
    config = load_config(None, ["method.name=lwf", "method.weight=0.5"])
    calls = []
    monkeypatch.setattr(registry, "parse_options", lambda *a: calls.append(a))
    method = create_method(config.method.name, config.method.typed_options())
    assert calls == [] and method.options == config.method.typed_options() and method.options is not config.method.typed_options()
    monkeypatch.undo()
    assert create_method("lwf", {"weight": 0.5}).options == method.options


def test_a_method_not_registered_yet_is_looked_up_when_its_options_are_asked_for():
    config = load_config(None, ["method.name=not_registered_here", "method.alpha=1"])  # load_run names such a run's method
    from vlcl.methods import UnknownMethodError

    with pytest.raises(UnknownMethodError, match="^unknown method 'not_registered_here'"):
        config.method.typed_options()
