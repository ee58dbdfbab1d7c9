"""Built-in trust strategies; importing this package registers them."""

from secure_pcft.collab.strategies.fedavg import FedAvgTrust
from secure_pcft.collab.strategies.local import LocalTrust
from secure_pcft.collab.strategies.oracle import OracleTrust
from secure_pcft.collab.strategies.predictions import PredictionTrust
from secure_pcft.collab.strategies.validation import ValidationTrust
from secure_pcft.collab.strategies.weights import WeightTrust

__all__ = [
    "FedAvgTrust",
    "LocalTrust",
    "OracleTrust",
    "PredictionTrust",
    "ValidationTrust",
    "WeightTrust",
]
