"""`compute:` where and how many processes train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class ComputeSpec(Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    nproc_per_node: int = Field(
        1, gt=0, description="Processes (usually GPUs) per node; >1 launches torchrun."
    )
    nnodes: int = Field(1, gt=0, description="Number of nodes.")
    node_rank: int = Field(0, ge=0, description="This node's rank (0 .. nnodes-1).")
    master_addr: str = Field("127.0.0.1", description="Address of node 0 for multi-node runs.")
    master_port: int = Field(29500, gt=0, lt=65536, description="Rendezvous port on node 0.")
    strategy: Literal["ddp", "zero2", "zero2_offload", "zero3", "zero3_offload", "fsdp2"] = Field(
        "ddp",
        description="Data-parallel strategy when more than one process trains: DDP, DeepSpeed ZeRO-2/3 "
        "(optionally with CPU offload), or FSDP2.",
    )

    @model_validator(mode="after")
    def _node_rank_in_range(self):
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes
