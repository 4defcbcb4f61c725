;; A reporter that calls output twice.
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{}")
  (func (export "coordinatord_abi_v1"))
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $output (i32.const 16) (i32.const 2))
    (call $output (i32.const 16) (i32.const 2))
    (i32.const 0))
)
