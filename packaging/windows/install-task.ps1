# Registers acqharvest as a boot-time scheduled task that restarts on failure.
param(
    [string]$Exe = "C:\acqharvest\Scripts\acqharvest.exe",
    [string]$Config = "C:\ProgramData\acqharvest\acqharvest.yaml",
    [string]$User = "NT AUTHORITY\SYSTEM"
)
$action = New-ScheduledTaskAction -Execute $Exe -Argument "run --config `"$Config`""
$trigger = New-ScheduledTaskTrigger -AtStartup
$settings = New-ScheduledTaskSettingsSet -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) `
    -ExecutionTimeLimit ([TimeSpan]::Zero) -StartWhenAvailable
Register-ScheduledTask -TaskName "acqharvest" -Action $action -Trigger $trigger -Settings $settings `
    -User $User -RunLevel Limited -Force
Start-ScheduledTask -TaskName "acqharvest"
