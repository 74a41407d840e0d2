# Copyright © 2026 mlx-kyutai-is contributors
"""Developer tools (the benchmark): leaves that nothing in the package, nor the tests, imports."""
