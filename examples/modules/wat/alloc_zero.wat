;; alloc_zero.wat: misbehaves on purpose. A reporter whose allocator always
;; says "out of memory" (returns 0): the host reports alloc_failed and never
;; calls the handler.
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 16) "{\"records\":[]}")

  (func (export "coordinatord_abi_v1"))

  (func (export "coordinatord_alloc") (param i32) (result i32)
    (i32.const 0))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $output (i32.const 16) (i32.const 14))
    (i32.const 0))
)
