"""torch_app: the model, each partition's data, training and evaluation."""

import torch
from torch import nn

NUM_FEATURES = 4
NUM_CLASSES = 3


class Net(nn.Module):
    """A small multi-layer perceptron."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(NUM_FEATURES, 16)
        self.fc2 = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def load_data(partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A partition of a synthetic three-class problem."""
    generator = torch.Generator().manual_seed(1000 * num_partitions + partition_id)
    x = torch.randn(24 + 8 * partition_id, NUM_FEATURES, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def train(
    net: Net, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int, seed: int
) -> float:
    """Mini-batch SGD; the batch order depends only on `seed`. Returns the last epoch's loss."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    total = 0.0
    for _ in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
    return total / len(y)


def test(net: Net, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy of `net` on (x, y)."""
    net.eval()
    with torch.no_grad():
        logits = net(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy
