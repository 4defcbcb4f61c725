;; A reporter whose allocator returns an address past the end of memory.
(module
  (memory (export "memory") 1)
  (func (export "coordinatord_abi_v1"))
  (func (export "coordinatord_alloc") (param i32) (result i32) (i32.const 65530))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32) (i32.const 0))
)
