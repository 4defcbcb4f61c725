;; oversized_output.wat: misbehaves on purpose. A reporter that outputs
;; 1 MiB, over the default output limit of 64 KiB: the host ends the call
;; in `output` with a trap.
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))

  ;; 20 pages: the 1 MiB it outputs is real memory.
  (memory (export "memory") 20)

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (memory.fill (i32.const 0) (i32.const 0x20) (i32.const 0x100000))
    (call $output (i32.const 0) (i32.const 0x100000))
    (i32.const 0))
)
