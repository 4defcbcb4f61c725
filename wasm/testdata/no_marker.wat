;; A reporter without the ABI version marker.
(module
  (memory (export "memory") 1)
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32) (i32.const 0))
)
