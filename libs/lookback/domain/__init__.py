"""The attribution domain in plain Python: no gRPC, no storage, no clock.

Times are integers of microseconds since the Unix epoch (:data:`Micros`).
"""
