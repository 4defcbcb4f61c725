;; memory_bomb.wat: misbehaves on purpose. A reporter that grows its memory
;; one page at a time until memory.grow refuses (at the module's
;; memory_pages limit), logs "memory.grow refused at N pages" at error level,
;; and traps.
(module
  (import "coordinatord" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)

  ;; [100, 123): the log line's opening text; [200, 206): its end.
  (data (i32.const 100) "memory.grow refused at ")
  (data (i32.const 200) " pages")

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  ;; $itoa writes n in decimal ending at 200 and returns where it starts.
  (func $itoa (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.const 200))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (local.get $n)))
    (local.get $p))

  (func $bomb
    (local $start i32)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    ;; "memory.grow refused at " + digits + " pages"
    (local.set $start (i32.sub (call $itoa (memory.size)) (i32.const 23)))
    (memory.copy (local.get $start) (i32.const 100) (i32.const 23))
    (call $log (i32.const 3) (local.get $start) (i32.sub (i32.const 206) (local.get $start)))
    unreachable)

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $bomb)
    (i32.const 0))

  (func (export "coordinatord_on_lease_event") (param i32 i32) (result i32)
    (call $bomb)
    (i32.const 0))
)
