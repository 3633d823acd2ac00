"""Repository-wide pytest settings shared by the core and every plugin's tests.

Hypothesis: no per-example deadline. Tests run two at a time on a 2-core machine
next to real services, so timing varies; correctness, not speed, is what they check
(benchmarks/ measures speed).
"""

from hypothesis import HealthCheck, settings

settings.register_profile("mlops", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mlops")
