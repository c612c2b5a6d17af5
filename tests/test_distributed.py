from pathlib import Path

from delphi.train.distributed import (
    requested_world_size,
    requested_world_sizes,
    warn_if_devices_idle,
    warn_if_world_size_differs,
)

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
    assert requested_world_size(["torchrun", "--nnodes=1:2", "--nproc_per_node=2"]) is None  # a range


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
    assert set(kinds) == {"cpu", "multi-cpu", "single-gpu", "multi-gpu", "fsdp", "multi-node"}
    # multi-cpu must take accelerate's torchrun path (MULTI_GPU), see the comment in the file
    assert kinds["multi-cpu"].endswith("MULTI_GPU") and kinds["fsdp"].endswith("FSDP")
    # no config pins a GPU: a scheduler's CUDA_VISIBLE_DEVICES must win
    for path in (REPO / "accelerate_configs").glob("*.yaml"):
        config = load_config_from_file(str(path))
        assert getattr(config, "gpu_ids", None) in (None, "all"), path.name


def test_elastic_torchrun_and_accelerate_machines():
    assert requested_world_sizes(["torchrun", "--nnodes=2:2", "--nproc_per_node=1", "-m", "x"]) == range(2, 3)
    assert requested_world_sizes(["torchrun", "--nnodes", "1:4", "--nproc-per-node", "2"]) == range(2, 9, 2)
    assert (
        warn_if_world_size_differs(2, ["torchrun", "--nnodes=2:2", "--nproc_per_node=1", "-m", "x"]) is None
    )
    assert warn_if_world_size_differs(6, ["torchrun", "--nnodes=1:4", "--nproc_per_node=2"]) is None
    assert "asked for 2 to 8 processes" in warn_if_world_size_differs(
        3, ["torchrun", "--nnodes=1:4", "--nproc_per_node=2"]
    )
    # accelerate's --num_processes is the total over machines
    machines = ["accelerate", "launch", "--num_machines", "2", "--machine_rank", "1", "--num_processes", "2"]
    assert warn_if_world_size_differs(2, machines) is None


def test_srun_tasks_that_each_train_alone_are_named():
    environ = {"SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"}
    message = warn_if_world_size_differs(1, ["slurmstepd: [1.0]"], environ)
    assert "srun started 8 tasks but each trains alone" in message
    assert (
        warn_if_world_size_differs(1, ["slurmstepd: [1.0]"], {"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"})
        is None
    )


def test_processes_per_machine_against_its_gpus():
    assert warn_if_devices_idle(8, 8) is None and warn_if_devices_idle(1, 0) is None
    assert "runs 2 process(es) but has 8 visible GPU(s)" in warn_if_devices_idle(2, 8)
