from vlcl.report import comparison_markdown, markdown_report


def fake_results(method, last):
    metrics = {
        "retrieval": {"a": {"mean_R@1": last}, "b": {"mean_R@1": 50.0}, "base": {"mean_R@1": 70.0}},
        "alignment": {},
        "zeroshot": {"zs_shape": {"top1": 90.0}},
    }
    return {
        "method": method,
        "benchmark": "embedded",
        "tasks": ["a", "b"],
        "heldout_retrieval": ["base"],
        "zeroshot_sets": ["zs_shape"],
        "stages": [{"name": "pretrained", "metrics": metrics}, {"name": "a", "metrics": metrics}],
        "summary": {
            "retrieval": {"mean_R@1": {"last": last, "avg": 40.0, "transfer": None, "bwt": -3.0, "forgetting": 3.0}},
            "zeroshot_top1": {"zs_shape": {"pretrained": 95.0, "final": 90.0, "pd": 5.0}},
            "heldout_mean_R@1": {"base": {"pretrained": 80.0, "final": 70.0, "pd": 10.0}},
            "zeroshot_mean_pd": 5.0,
        },
    }


def test_markdown_report_has_matrix_and_summary():
    text = markdown_report(fake_results("finetune", 42.0))
    assert "| pretrained | 42.0 | 50.0 | 70.0 | 90.0 |" in text
    assert "| retrieval R@1 last | 42.0 |" in text
    assert "| retrieval R@1 transfer | - |" in text


def test_comparison_has_one_row_per_run():
    text = comparison_markdown([fake_results("finetune", 42.0), fake_results("cclip", 45.5)])
    assert "| finetune | 42.0 | 40.0 | - | -3.0 | 3.0 | 5.0 | 70.0 |" in text
    assert "| cclip | 45.5 |" in text
    assert text.count("### ") == 2


def test_run_labels_show_a_learning_rate_only_where_one_is_used():
    from vlcl.report.tables import run_label

    def results(method):
        return {"method": method, "config": {"method": {"name": method, "form": "dual"}, "train": {"lr": 1e-4}}}

    assert run_label(results("finetune")) == "finetune lr=0.0001 form=dual"
    assert run_label(results("rail")) == "rail form=dual"  # no optimiser: its train.lr means nothing
    assert run_label(results("zeroshot")) == "zeroshot form=dual"
    assert run_label(results("a_plugin_not_installed")) == "a_plugin_not_installed lr=0.0001 form=dual"
