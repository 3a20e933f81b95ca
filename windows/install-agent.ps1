<#
.SYNOPSIS
Installs, upgrades or removes the tokenfleet agent as a Windows service.

.DESCRIPTION
Install (the default):
  1. copies tokenfleet-agent.exe to %ProgramFiles%\tokenfleet;
  2. creates %ProgramData%\tokenfleet (configuration) and %ProgramData%\tokenfleet\agent
     (journal, sealing key, log) readable only by SYSTEM and Administrators;
  3. writes %ProgramData%\tokenfleet\agent.yaml and, when a password is given,
     %ProgramData%\tokenfleet\broker-password, under the same ACL;
  4. runs "tokenfleet-agent.exe install --config ...", which registers the service
     tokenfleet-agent (automatic start, restarted 30 s after a failure), and starts it.
An existing service is stopped and reinstalled (upgrade); the data directory is kept.

Uninstall (-Uninstall): stops and removes the service and the program. The configuration
and the data directory stay unless -RemoveData is given (the journal holds unfinished jobs
and the sealing key the coordinator knows this agent by).

Run it from an elevated PowerShell.

.EXAMPLE
.\install-agent.ps1 -BrokerUrl amqps://agent-ws-0042@broker.example.org:5671/tokenfleet `
    -BrokerPassword (Read-Host -AsSecureString 'Broker password') -BrokerCaFile .\broker-ca.pem `
    -Module 'C:\Windows\System32\opensc-pkcs11.dll'

.EXAMPLE
.\install-agent.ps1 -Uninstall
#>
[CmdletBinding(DefaultParameterSetName = 'Install')]
param(
    # amqp:// or amqps:// URL of the broker, without the password.
    [Parameter(ParameterSetName = 'Install', Mandatory = $true)]
    [string] $BrokerUrl,

    # The broker password; stored in a file only SYSTEM and Administrators can read.
    [Parameter(ParameterSetName = 'Install')]
    [SecureString] $BrokerPassword,

    # PEM file with the CA certificates of the broker's TLS certificate.
    [Parameter(ParameterSetName = 'Install')]
    [string] $BrokerCaFile,

    # Agent ID; default: the computer name, lower-cased.
    [Parameter(ParameterSetName = 'Install')]
    [string] $AgentId,

    # PKCS#11 modules (DLL paths); default: those of the token models attached, else OpenSC's.
    [Parameter(ParameterSetName = 'Install')]
    [string[]] $Module,

    # How the agent's broker queue is made sure of: check (enrolled agents), declare, auto.
    [Parameter(ParameterSetName = 'Install')]
    [ValidateSet('check', 'declare', 'auto')]
    [string] $Queue = 'check',

    # Broker users commands are accepted from.
    [Parameter(ParameterSetName = 'Install')]
    [string[]] $CoordinatorUser,

    # The program to install; default: tokenfleet-agent.exe next to this script.
    [Parameter(ParameterSetName = 'Install')]
    [string] $Binary = (Join-Path $PSScriptRoot 'tokenfleet-agent.exe'),

    [Parameter(ParameterSetName = 'Uninstall', Mandatory = $true)]
    [switch] $Uninstall,

    [Parameter(ParameterSetName = 'Uninstall')]
    [switch] $RemoveData
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$ServiceName = 'tokenfleet-agent'
$InstallDir = Join-Path $env:ProgramFiles 'tokenfleet'
$Exe = Join-Path $InstallDir 'tokenfleet-agent.exe'
$ConfigDir = Join-Path $env:ProgramData 'tokenfleet'
$DataDir = Join-Path $ConfigDir 'agent'
$ConfigFile = Join-Path $ConfigDir 'agent.yaml'
$PasswordFile = Join-Path $ConfigDir 'broker-password'

function Assert-Administrator {
    $principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'Run this script from an elevated PowerShell (Run as administrator).'
    }
}

# Runs tokenfleet-agent.exe; a non-zero exit status stops the script with its message.
function Invoke-Agent([string[]] $Arguments, [int[]] $Allowed = @(0)) {
    & $Exe @Arguments
    if ($Allowed -notcontains $LASTEXITCODE) {
        throw "tokenfleet-agent $($Arguments -join ' ') failed with exit status $LASTEXITCODE"
    }
}

# Only SYSTEM (S-1-5-18) and Administrators (S-1-5-32-544), inherited by what is inside;
# SIDs rather than names, which are localised.
function Set-PrivateAcl([string] $Path) {
    & icacls.exe $Path /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls failed on $Path" }
}

# A YAML single-quoted scalar: nothing in it is interpreted but a doubled quote.
function ConvertTo-YamlString([string] $Value) {
    return "'" + $Value.Replace("'", "''") + "'"
}

function Remove-AgentService {
    if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
        if (Test-Path $Exe) {
            Invoke-Agent @('stop') -Allowed @(0, 1)
            Invoke-Agent @('uninstall')
        } else {
            Stop-Service -Name $ServiceName -ErrorAction SilentlyContinue
            & sc.exe delete $ServiceName | Out-Null
        }
    }
}

Assert-Administrator

if ($Uninstall) {
    Remove-AgentService
    Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $InstallDir
    if ($RemoveData) {
        Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $ConfigDir
        Write-Host "Removed the $ServiceName service, the program and $ConfigDir."
    } else {
        Write-Host "Removed the $ServiceName service and the program; $ConfigDir is kept (-RemoveData removes it)."
    }
    return
}

if (-not (Test-Path $Binary)) { throw "No program at $Binary (give -Binary)." }
if ($BrokerUrl -notmatch '^amqps?://') { throw "-BrokerUrl must be an amqp:// or amqps:// URL." }
if ($BrokerUrl -match '^amqps?://[^/@]*:[^/@]*@') {
    throw '-BrokerUrl holds a password: give it with -BrokerPassword instead.'
}

Remove-AgentService

New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
Copy-Item -Force $Binary $Exe

New-Item -ItemType Directory -Force -Path $ConfigDir, $DataDir | Out-Null
Set-PrivateAcl $ConfigDir
Set-PrivateAcl $DataDir

$yaml = @(
    '# Written by install-agent.ps1; see agent.example.yaml for every setting.'
    "data_dir: $(ConvertTo-YamlString $DataDir)"
)
if ($AgentId) { $yaml += "id: $(ConvertTo-YamlString $AgentId)" }
if ($Module) {
    $yaml += 'modules:'
    foreach ($m in $Module) { $yaml += "  - $(ConvertTo-YamlString $m)" }
}
$yaml += 'log:'
$yaml += '  format: json'
$yaml += 'broker:'
$yaml += "  url: $(ConvertTo-YamlString $BrokerUrl)"
$yaml += "  queue: $Queue"
if ($BrokerPassword) {
    $plain = [Runtime.InteropServices.Marshal]::PtrToStringBSTR([Runtime.InteropServices.Marshal]::SecureStringToBSTR($BrokerPassword))
    try {
        [IO.File]::WriteAllText($PasswordFile, $plain, (New-Object Text.UTF8Encoding($false)))
    } finally {
        $plain = $null
    }
    $yaml += "  password_file: $(ConvertTo-YamlString $PasswordFile)"
}
if ($BrokerCaFile) {
    $ca = Join-Path $ConfigDir 'broker-ca.pem'
    Copy-Item -Force $BrokerCaFile $ca
    $yaml += "  ca_file: $(ConvertTo-YamlString $ca)"
}
if ($CoordinatorUser) {
    $yaml += '  coordinator_users:'
    foreach ($u in $CoordinatorUser) { $yaml += "    - $(ConvertTo-YamlString $u)" }
}
[IO.File]::WriteAllLines($ConfigFile, [string[]] $yaml, (New-Object Text.UTF8Encoding($false)))

Invoke-Agent @('install', '--config', $ConfigFile)
Invoke-Agent @('start')
Invoke-Agent @('status') -Allowed @(0, 3)
Write-Host "Installed $ServiceName. Configuration: $ConfigFile; log: $(Join-Path $DataDir 'agent.log')."
