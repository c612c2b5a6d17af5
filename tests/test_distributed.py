from pathlib import Path

from delphi.train.distributed import requested_world_size, warn_if_world_size_differs

REPO = Path(__file__).resolve().parents[1]


def test_accelerate_flags_and_config_files():
    assert (
        requested_world_size(["/v/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "x"]) == 2
    )
    assert (
        requested_world_size(["python", "-m", "accelerate.commands.launch", "--num-processes=4", "t.py"]) == 4
    )
    config = str(REPO / "accelerate_configs" / "multi-cpu.yaml")
    assert requested_world_size(["accelerate", "launch", "--config_file", config, "-m", "delphi.train"]) == 2
    # an explicit flag wins over the config file
    assert (
        requested_world_size(["accelerate", "launch", "--config_file", config, "--num_processes", "3"]) == 3
    )
    assert requested_world_size(["accelerate", "launch", "train.py"]) is None


def test_torchrun_flags():
    assert requested_world_size(["/v/bin/torchrun", "--nproc_per_node", "2", "-m", "delphi.train"]) == 2
    assert (
        requested_world_size(["python", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node=4"])
        == 8
    )
    assert requested_world_size(["torchrun", "--nproc_per_node", "gpu", "x.py"]) is None


def test_not_a_launcher():
    assert requested_world_size(["bash", "-c", "python -m delphi.train r.yaml"]) is None
    assert requested_world_size(["/usr/bin/make", "train", "--num_processes", "4"]) is None


def test_warning_only_on_mismatch():
    argv = ["accelerate", "launch", "--cpu", "--num_processes", "2"]
    assert warn_if_world_size_differs(2, argv) is None
    message = warn_if_world_size_differs(1, argv)
    assert "asked for 2 processes" in message and "multi-cpu.yaml" in message


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted((REPO / "accelerate_configs").glob("*.yaml")):
        kinds[path.stem] = str(load_config_from_file(str(path)).distributed_type)
    assert set(kinds) == {"cpu", "multi-cpu", "single-gpu", "multi-gpu", "fsdp"}
    # multi-cpu must take accelerate's torchrun path (MULTI_GPU), see the comment in the file
    assert kinds["multi-cpu"].endswith("MULTI_GPU") and kinds["fsdp"].endswith("FSDP")
