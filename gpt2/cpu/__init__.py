"""The CPU fast paths: matmul libraries, the chunked loss, the allocator setting, the machine profile."""
